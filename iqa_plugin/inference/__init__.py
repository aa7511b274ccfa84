"""Batch scoring of many images with any quality network."""
