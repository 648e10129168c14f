"""A small Django project that makes Django hop between threads, as real ones do.

It imports ``asgiref`` through Django only and knows nothing of tracebridge:
``serve.py`` beside it traces it unchanged.
"""
