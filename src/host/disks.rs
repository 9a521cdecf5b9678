//! Disk files and the image cache: the adapter is being written (see ARCHITECTURE.md).
