"""The shared kernel kit: a kernel, minivm's own initramfs and a module disk."""
