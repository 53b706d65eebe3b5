"""Datasets, mappers and samplers."""

from .datasets import generate_demo_data, register_all_datasets, register_demo_datasets

__all__ = ["generate_demo_data", "register_all_datasets", "register_demo_datasets"]
