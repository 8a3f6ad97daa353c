"""Plotly Dash monitoring wall (issue 6); reads state through Redis only."""
