"""Docked Qt widgets: streaming status and settings, tables, keypoints, browser."""
