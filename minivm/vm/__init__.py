"""Running a MiniVM: the QEMU command line, acceleration, QMP control, the serial console."""
