"""The report's figures: pure figure-data builders and the matplotlib functions that draw them.

One module per figure family; each has a ``figure_data_*`` function (the numbers drawn,
computed from the artefacts and tested against them) and a ``plot_*`` function that only
draws what it returns, on a figure outside pyplot (nothing is shown or written here;
``stages.report`` reads the artefacts into :class:`~.inputs.Artefacts` and saves the
figures).

1. :mod:`.arf`: the target and corrected ARFs; m(E; theta_best), the posterior median and
   16-84% band of m(E), m(E; theta_true) when the truth is known.
2. :mod:`.temperatures`: telescope 1 against telescope 0 per source, before (T1) and after
   (T1' at theta_best) the correction, and the fractional difference from T0.
3. :mod:`.parity`: emulated against simulated (asimov) T1 and T1' at the emulator's off-grid
   check points, and residuals against T_true for the emulator and grid interpolation.
4. :mod:`.posterior`: corner plot of the theta posterior, theta_true and theta_best marked.
5. :mod:`.profiles`: C(T) - min C of both fits from grid.h5's curves, at the grid theta
   nearest theta_best and four T_true values.

:mod:`.summary` writes the summary table; :mod:`.style` holds the shared colours and axes.
"""
