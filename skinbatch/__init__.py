"""skinbatch: score dermatology photographs for skin cancer at scale (Esteva et al., Nature 2017)."""

__version__ = "0.1.0"
