set terminal pngcairo noenhanced size 900,600 font 'sans,11'
set output 'loss_surface.png'
set grid
set key top right
set autoscale fix
set offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05
set format x '%.0e'
set logscale xy
set xtics 2
set ytics 2
set format x '%.2g'
set format y '%.0f'
set xlabel 'lr'
set ylabel 'batch (tokens)'
set cblabel 'final loss'
set palette rgb 33,13,10
set title 'loss surface of the cell N = 3.57e+05, D = 2.25e+06'
plot 'loss_surface.dat' using 1:2:3 with points pt 5 ps 3 palette notitle
