"""Stage one: knowledge base, rule engine and chain-of-thought writer that turn biomarker tables into instructions."""

from grok.knowledge.base import KnowledgeBase, KnowledgeBaseError
from grok.knowledge.engine import Assessment, Diagnosis, Finding, Quantity, evaluate_row
from grok.knowledge.parser import available_versions, load_knowledge_base
from grok.knowledge.writer import Conclusion, ReportWriter, conclude

__all__ = [
    "Assessment",
    "Conclusion",
    "Diagnosis",
    "Finding",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "Quantity",
    "ReportWriter",
    "available_versions",
    "conclude",
    "evaluate_row",
    "load_knowledge_base",
]
