"""The one training runtime shared by every task (pretraining, finetuning): `bertforge.train.trainer.Trainer` runs a
`TrainTask` (set-up, optimizer steps, log window, evaluation hooks, checkpoints, resume, preemption), on the pieces
below it — the non-finite skip gate's agreement across ranks, the stop agreement and the in-a-row limit
(`bertforge.train.step`), the set-up of device, environment and process group (`bertforge.train.setup`),
checkpoints (`checkpoint`), the resume rule (`resume`), metrics and RNG."""
