"""The app's glue: classifying one uploaded clip with a shipped model (`inference`) and the Streamlit helpers the
pages share (`ui`). The pages (`pages/`, `app.py`) and the CLI (`qmoe/__main__.py`) sit on top of it.

The top layer: may import every layer below; nothing in qmoe imports it except the CLI. Kept light: importing this
package imports nothing (the classify path must start fast, without torch or Streamlit).
"""
