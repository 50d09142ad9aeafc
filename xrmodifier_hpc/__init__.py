"""xrmodifier: find a parametric ARF correction that makes two X-ray telescopes agree."""

__version__ = "0.1.0"
