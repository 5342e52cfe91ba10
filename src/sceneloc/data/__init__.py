"""Datasets on disk: the files of one dataset (readers) and scenes of posed frames with their ground truth."""
