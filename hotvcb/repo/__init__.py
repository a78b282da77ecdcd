"""The deduplicating backup repository; its format is docs/repository.md."""
