"""Synthetic posed RGB-D scenes (placeholder; being written)."""
import argparse


def add_synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir")
