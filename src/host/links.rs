//! Linux links: the adapter is being written (see ARCHITECTURE.md).
