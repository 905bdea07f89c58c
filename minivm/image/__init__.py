"""The image pipeline: a source (context, reference, archive) to a root filesystem in a QCOW2."""
