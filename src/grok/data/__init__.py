"""Image readers, transforms, splits, the SynthEye generator and the per-stage DataModules."""
