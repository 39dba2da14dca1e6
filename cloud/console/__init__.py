"""The operator console: server-rendered pages for the command centre, departments, grid workers and residents."""
