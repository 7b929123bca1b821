"""Read-model builders (one module per projection) and the query functions next to their tables."""
