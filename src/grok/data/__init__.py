"""Data shared by every stage: the biomarker-table reader, image readers and transforms, the subject-level split and
the SynthEye generator. Each stage's DataModule lives with its stage (`grok.align.datamodule`,
`grok.mllm.datamodule`)."""
