"""SynthEye: the embedded default dataset (disease-conditional biomarkers that cause the OCT and CFP images drawn)."""

from grok.data.synth.writer import SynthOptions, label_counts, load_appearance, write_syntheye

__all__ = ["SynthOptions", "label_counts", "load_appearance", "write_syntheye"]
