"""GROK: grounded ophthalmic reports from paired OCT/CFP images and quantitative biomarkers."""

__version__ = "0.1.0"
