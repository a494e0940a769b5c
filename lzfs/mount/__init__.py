"""The mount process: starting the daemon, serving until unmounted, finding mounts in
/proc/self/mountinfo, taking them down, and saying what keeps one busy."""
