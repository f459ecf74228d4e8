//! unimem: user-space heterogeneous memory management on Vulkan.
