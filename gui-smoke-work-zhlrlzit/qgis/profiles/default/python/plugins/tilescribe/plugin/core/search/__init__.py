"""Search: query -> ranked tiles (dense, fast first pass, words), and hits as files."""
