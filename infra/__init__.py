"""The Pulumi program: validated stack config (`config`) composed into components (`program`)."""
