"""Task handlers (`@register_task`) and domain services; every module here is imported at start-up."""
