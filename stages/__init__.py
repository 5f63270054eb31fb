"""Dataset captioning and prompt upsampling toolkit: the library under caption.py and refine.py."""

__version__ = "0.1.0"
