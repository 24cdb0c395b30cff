"""The Oxford-IIIT Pet data set: its index and splits (:mod:`.index`), reading its files
(:mod:`.reading`), binary masks (:mod:`.masks`), resizing (:mod:`.resize`) and the torch
``Dataset`` (:mod:`.dataset`). Import names from the module that defines them (``from
lab2.data.dataset import OxfordPetSegmentation``): this package face imports nothing, so the
processes that only check files stay light."""
