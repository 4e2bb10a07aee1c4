"""FastAPI's tutorial examples for background tasks, as FastAPI ships them.

Source: https://github.com/fastapi/fastapi, docs_src/background_tasks/ at commit c3f316b7e814
(the tests they pass: tests/test_tutorial/test_background_tasks/). FastAPI is MIT-licensed,
Copyright (c) 2018 Sebastián Ramírez. Each file is FastAPI's, unchanged but for the comment
naming its source; tests/integration/test_fastapi_tutorials.py changes their import only.
"""
