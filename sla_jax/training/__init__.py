"""The pretext task's training: the network (``models``), its state and optimizer (``state``), the jitted step
with edits and soft labels (``pretext``), the loop with checkpoints (``loop``), ensembles of K members in one
program (``ensemble``), ImageNet weights (``pretrained``), processes (``distributed``), the step's FLOPs
(``flops``) and how often an edit changes nothing (``analysis``)."""
