# Placeholder: the container image is delivered by the "Operator experience" issue.
# Until then, build the binary with `cargo build --release --locked`.
FROM scratch
