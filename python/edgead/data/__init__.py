"""edgead.data: image IO, datasets, pre-processing, synthetic defects and the demo dataset.

Torch-free (NumPy + OpenCV + tqdm): the deployment runtime imports it on Jetson boxes that
have no torch. ``edgead.data.demo`` additionally needs scikit-image (imported lazily).
"""
from __future__ import annotations

from .io import IMAGE_EXTENSIONS, ImageReadError, is_image_file, read_image, read_mask, to_uint8, write_image
from .transforms import (
    IMAGENET_GREY_MEAN,
    IMAGENET_GREY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MOBILENET_KERAS_MEAN,
    MOBILENET_KERAS_STD,
    Preprocessing,
    resize_mask,
    to_float01,
)
from .datasets import (
    ImageFolder,
    MVTecDataset,
    Sample,
    VisADataset,
    iter_batches,
    list_images,
    load_mask,
    open_dataset,
)
from .synthetic import DEFECT_TYPES, make_large_train_split, make_mvtec_dataset, paint_defect
from .demo import DEMO_CATEGORIES, build_demo_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "is_image_file",
    "read_image",
    "read_mask",
    "to_uint8",
    "write_image",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGENET_GREY_MEAN",
    "IMAGENET_GREY_STD",
    "MOBILENET_KERAS_MEAN",
    "MOBILENET_KERAS_STD",
    "Preprocessing",
    "resize_mask",
    "to_float01",
    "Sample",
    "load_mask",
    "list_images",
    "MVTecDataset",
    "VisADataset",
    "ImageFolder",
    "open_dataset",
    "iter_batches",
    "DEFECT_TYPES",
    "paint_defect",
    "make_mvtec_dataset",
    "make_large_train_split",
    "DEMO_CATEGORIES",
    "build_demo_dataset",
]
