"""Audio I/O and signal functions: streaming ffmpeg decode, frame energies, silence split, FLAC."""
