"""crjepa.train: the training run of train_accelerate.py, one concern per module.

    config        the run configuration: schema and key docs, YAML + dotted overrides, checks, --help
    data          the run's data set, checked against the model; how its training rows are paired
    sampler       what one epoch draws (extra sources, data.pair_share) and in which order (seeded, sharded)
    masks         training masks keyed by (seed, step, sample id, sensor)
    optim         AdamW with the model's no_weight_decay() declaration
    schedule      the paper's warm-up + cosine learning rate
    compile       training.compile (speed only)
    checkpoints   the output folder, atomic checkpoints, resume checks
    guards        non-finite losses and gradients
    evaluation    retrieval scores during the run, evaluation checks before it
    state         Run and TrainState
    publish       model folder + card, embeddings archive, results.json, Hub uploads
    loop          setup, start, batches, train_step, after_step, finish (and train, which chains them)
    export        a checkpoint as a from_pretrained folder (crjepa export-checkpoint)

Each module imports what it needs; importing this package imports none of them.
"""
