"""`lenet serve`: a trained run behind an HTTP API and a web page.

- `limits.py`: the limits a request must keep, and `ApiError` (status, error, detail);
- `queries.py`: the POST routes' query parameters, checked by hand (cheaper);
- `decoding.py`: request bodies (images, NPY, IDX, multipart) to 28x28 model inputs;
- `batching.py`: single-image requests that arrive together, classified in one batch;
- `service.py`: the run, opened once and warmed up; answers as JSON-ready dicts;
- `metrics.py`: Prometheus counters and histograms;
- `middleware.py`: per request: token, body limit, one log line, metrics; it answers
  the three POST routes itself (FastAPI's stack is a quarter of a request's cost);
- `app.py`: the routes (FastAPI) and the page (`static/`);
- `server.py`: uvicorn, the way `lenet serve` starts it.
"""
