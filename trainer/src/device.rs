//! Where candle trains: `--device cpu|cuda[:N]`.
//!
//! The CPU is always there. CUDA needs the trainer built with the `cuda`
//! feature (candle's CUDA backend; `.ci/cuda-build` builds it) and, at run
//! time, the NVIDIA driver and a visible GPU. Asking for CUDA without either
//! is an error that says which is missing; nothing falls back silently.

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use candle_core::Device;

/// A training device as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrainDevice {
    /// candle's CPU backend (threads: `--threads`).
    #[default]
    Cpu,
    /// CUDA GPU number `N` (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for TrainDevice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(Self::Cuda)
                    .map_err(|_| format!("`{s}`: the GPU number after `cuda:` must be an integer")),
                None => Err(format!("`{s}`: expected cpu, cuda or cuda:N")),
            },
        }
    }
}

impl fmt::Display for TrainDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl TrainDevice {
    /// Opens the device: an error names what is missing (the `cuda`
    /// feature, the driver, the GPU).
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => open_cuda(n),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> Result<Device> {
    Device::new_cuda(n).map_err(|e| {
        // candle appends a backtrace to its message: keep the first line.
        let e = e.to_string();
        anyhow::anyhow!(
            "cuda:{n}: no usable CUDA device (is the NVIDIA driver loaded and GPU {n} visible? \
             nvidia-smi lists them): {}",
            e.lines().next().unwrap_or_default()
        )
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> Result<Device> {
    anyhow::bail!(
        "cuda:{n}: this fakewatch-train was built without the `cuda` feature \
         (build it with `.ci/cuda-build`, see docs/training-gpu.md)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_devices() {
        for (s, d) in [
            ("cpu", TrainDevice::Cpu),
            ("cuda", TrainDevice::Cuda(0)),
            ("cuda:1", TrainDevice::Cuda(1)),
        ] {
            assert_eq!(s.parse::<TrainDevice>(), Ok(d));
        }
        assert_eq!(TrainDevice::Cuda(1).to_string(), "cuda:1");
        assert_eq!(TrainDevice::Cuda(0).to_string(), "cuda:0");
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            let e = bad.parse::<TrainDevice>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn cpu_opens_and_cuda_says_what_is_missing() {
        assert!(TrainDevice::Cpu.open().unwrap().is_cpu());
        match TrainDevice::Cuda(0).open() {
            Ok(d) => assert!(d.is_cuda()),
            Err(e) => {
                let e = format!("{e:#}");
                let why = if cfg!(feature = "cuda") {
                    "no usable CUDA device"
                } else {
                    "without the `cuda` feature"
                };
                assert!(e.contains(why), "{e}");
            }
        }
    }
}
