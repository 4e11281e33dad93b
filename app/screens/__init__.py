"""One screen per room of the control panel."""
