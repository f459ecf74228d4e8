//! unimem-alloc: the shared-virtual-address arena and the allocator over it.
