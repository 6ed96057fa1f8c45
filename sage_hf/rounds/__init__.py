"""One SAGE round: score, select anchors, sample, synthesise, label, fill the buffer."""
