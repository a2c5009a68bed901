//! MNIST in its standard IDX files, gzipped or not.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const IMAGE_MAGIC: u32 = 2051;
const LABEL_MAGIC: u32 = 2049;
const SIDE: usize = 28;

/// Why MNIST could not be read. Every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// None of the accepted names of a file exists in the folder.
    #[error("{what}: no file {name} (or {name}.gz, or the dotted name {dotted}[.gz]) in {}", dir.display())]
    Missing {
        /// Which file: `train images`, `test labels`, ...
        what: String,
        /// The canonical name, e.g. `train-images-idx3-ubyte`.
        name: String,
        /// The dotted name, e.g. `train-images.idx3-ubyte`.
        dotted: String,
        /// The folder searched.
        dir: PathBuf,
    },
    /// The file could not be read or un-gzipped.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The header's magic number is wrong: not an IDX file of that kind.
    #[error("{}: magic number {found}, expected {expected} ({kind} IDX file)", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number read.
        found: u32,
        /// The magic number expected.
        expected: u32,
        /// `image` or `label`.
        kind: &'static str,
    },
    /// The file is shorter than its header says.
    #[error("{}: truncated: {found} bytes, expected {expected} ({detail})", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes present.
        found: usize,
        /// Bytes the header promises.
        expected: usize,
        /// What the header says.
        detail: String,
    },
    /// Images and labels disagree in count or the image size is not 28x28.
    #[error("{}: {detail}", path.display())]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A tensor could not be built.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The training or the test half of MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// 60,000 images in the full set.
    Train,
    /// 10,000 images in the full set.
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Images `(n, 1, 28, 28)` as f32 in [0, 1] and labels `(n,)` as u32.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// Training images.
    pub train_images: Tensor,
    /// Training labels.
    pub train_labels: Tensor,
    /// Test images.
    pub test_images: Tensor,
    /// Test labels.
    pub test_labels: Tensor,
    /// Where the data came from, for the user.
    pub source: String,
}

impl Mnist {
    /// The folder of the subset bundled with the example (`examples/mnist/data`:
    /// the first 20,000 training and 2,000 test images), used when no data
    /// folder is given.
    pub fn bundled_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
    }

    /// Reads the four IDX files from `dir`, keeping at most `limit_train` and
    /// `limit_test` records (in file order).
    pub fn load(
        dir: &Path,
        limit_train: Option<usize>,
        limit_test: Option<usize>,
        device: &Device,
    ) -> Result<Self, DataError> {
        let (train_images, train_labels) = read_split(dir, Split::Train, limit_train, device)?;
        let (test_images, test_labels) = read_split(dir, Split::Test, limit_test, device)?;
        Ok(Self {
            train_images,
            train_labels,
            test_images,
            test_labels,
            source: dir.display().to_string(),
        })
    }

    /// Random images with labels that depend on them (the brightest of ten
    /// horizontal bands), so that a model can learn them: for tests that need
    /// no files.
    pub fn synthetic(
        n_train: usize,
        n_test: usize,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut make = |n: usize| -> candle_core::Result<(Tensor, Tensor)> {
            let mut pixels = vec![0f32; n * SIDE * SIDE];
            let mut labels = Vec::with_capacity(n);
            for img in pixels.chunks_mut(SIDE * SIDE) {
                let label: u32 = rng.random_range(0..10);
                for (row, line) in img.chunks_mut(SIDE).enumerate() {
                    let lit = row * 10 / SIDE == label as usize;
                    for px in line {
                        *px = rng.random::<f32>() * if lit { 1.0 } else { 0.3 };
                    }
                }
                labels.push(label);
            }
            Ok((
                Tensor::from_vec(pixels, (n, 1, SIDE, SIDE), device)?,
                Tensor::from_vec(labels, n, device)?,
            ))
        };
        let (train_images, train_labels) = make(n_train)?;
        let (test_images, test_labels) = make(n_test)?;
        Ok(Self {
            train_images,
            train_labels,
            test_images,
            test_labels,
            source: format!("synthetic (seed {seed})"),
        })
    }

    /// Number of training images.
    pub fn train_len(&self) -> usize {
        self.train_labels.dims()[0]
    }

    /// Number of test images.
    pub fn test_len(&self) -> usize {
        self.test_labels.dims()[0]
    }
}

/// Finds a file under any accepted name: `train-images-idx3-ubyte`,
/// `train-images.idx3-ubyte`, each optionally `.gz`.
fn find(dir: &Path, split: Split, kind: &str, what: &str) -> Result<PathBuf, DataError> {
    let name = format!("{}-{kind}", split.prefix());
    let dotted_name = format!("{}-{}", split.prefix(), kind.replacen("-idx", ".idx", 1));
    for candidate in [&name, &dotted_name] {
        for ext in ["", ".gz"] {
            let path = dir.join(format!("{candidate}{ext}"));
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    Err(DataError::Missing {
        what: what.to_string(),
        name,
        dotted: dotted_name,
        dir: dir.to_path_buf(),
    })
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the header and length of an IDX file; returns the record count and
/// the payload.
fn parse_idx<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    kind: &'static str,
    dims: usize,
) -> Result<(usize, &'a [u8]), DataError> {
    let header = 4 + 4 * dims;
    let truncated = |expected: usize, detail: String| DataError::Truncated {
        path: path.to_path_buf(),
        found: bytes.len(),
        expected,
        detail,
    };
    if bytes.len() < header {
        return Err(truncated(header, format!("{kind} IDX header")));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found,
            expected: magic,
            kind,
        });
    }
    let sizes: Vec<usize> = (0..dims)
        .map(|d| be_u32(bytes, 4 + 4 * d) as usize)
        .collect();
    if dims == 3 && (sizes[1] != SIDE || sizes[2] != SIDE) {
        return Err(DataError::Inconsistent {
            path: path.to_path_buf(),
            detail: format!("images are {}x{}, expected 28x28", sizes[1], sizes[2]),
        });
    }
    let payload: usize = sizes.iter().product();
    if bytes.len() < header + payload {
        return Err(truncated(
            header + payload,
            format!("header promises {} {kind}s", sizes[0]),
        ));
    }
    Ok((sizes[0], &bytes[header..header + payload]))
}

fn read_split(
    dir: &Path,
    split: Split,
    limit: Option<usize>,
    device: &Device,
) -> Result<(Tensor, Tensor), DataError> {
    let image_path = find(dir, split, "images-idx3-ubyte", &format!("{split} images"))?;
    let label_path = find(dir, split, "labels-idx1-ubyte", &format!("{split} labels"))?;
    let image_bytes = read_bytes(&image_path)?;
    let label_bytes = read_bytes(&label_path)?;
    let (n_images, pixels) = parse_idx(&image_path, &image_bytes, IMAGE_MAGIC, "image", 3)?;
    let (n_labels, labels) = parse_idx(&label_path, &label_bytes, LABEL_MAGIC, "label", 1)?;
    if n_images != n_labels {
        return Err(DataError::Inconsistent {
            path: label_path,
            detail: format!(
                "{n_labels} labels for {n_images} images in {}",
                image_path.display()
            ),
        });
    }
    let n = limit.map_or(n_images, |l| l.min(n_images));
    let images = Tensor::from_slice(&pixels[..n * SIDE * SIDE], (n, 1, SIDE, SIDE), device)?
        .to_dtype(DType::F32)?
        .affine(1.0 / 255.0, 0.0)?;
    let labels = Tensor::from_slice(&labels[..n], n, device)?.to_dtype(DType::U32)?;
    Ok((images, labels))
}
