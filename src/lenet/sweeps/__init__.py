"""Many runs: the sweep file, its runs on a process pool or Ray, and comparing them."""
