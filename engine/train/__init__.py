"""The training runtime shared by every task (pretraining, finetuning): the pieces of one optimizer step that every
loop needs once — the non-finite skip gate's agreement across ranks, the stop agreement and the in-a-row limit
(`bertforge.train.step`), and the set-up of device, environment and process group (`bertforge.train.setup`)."""
