"""gpuport's pytest plugin: a test marked `@pytest.mark.gpuport` runs natively and, the very same body, inside
a page in each browser lane (Chromium, Firefox, WebKitGTK, a Chromium cpu lane).

One job per module: `browsers` (launch recipes, one browser per kind per session), `pages` (lanes: one
loaded page each, Python run in it), `site` (the static site the pages load, the user's wheel),
`plugin` (pytest's hooks and fixtures; the `pytest11` entry point), `distribute` (lanes under pytest-xdist),
`results` (outcomes per test and lane, merged across workers), `report` (`--gpuport-report`), and what runs
inside the page:
`inpage` (the test runner and module loader) and `stand_in` (pytest's test-writing API where pytest is absent).

Nothing is imported here: the page imports `gpuport.testing.inpage` without pytest or Playwright.

Layer: the top; imports site/ (the lanes' pages are a `gpuport export`) and any layer below.
"""
