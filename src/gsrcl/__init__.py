"""gsrcl: reference-based cell-type annotation with GsRCL and AF-RCL."""

__version__ = "0.1.0"
