"""Proofreading: the edit journal, painting, merge and split, synapse edits, undo and redo."""
