"""Grounded quantities: numbers in conversations are values, not digits (design notes, section 7).

symbols   one quantity token per schema quantity, reference bound and fixed knowledge-base threshold
spans     where a text states each value: recorded by stage one as it writes
matching  spans of text stage one did not write (an LLM's rewrite, a free-text prompt)
"""
