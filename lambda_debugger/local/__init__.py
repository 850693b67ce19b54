"""Local mode: an embedded Lambda Runtime API and a runner for the real runtime client."""
