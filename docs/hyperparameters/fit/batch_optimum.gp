set terminal pngcairo noenhanced size 900,600 font 'sans,11'
set output 'batch_optimum.png'
set grid
set key top right
set autoscale fix
set offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05
set format x '%.0e'
set logscale xy
set ytics 1.5
set format y '%.2g'
set xlabel 'compute C = 6 N D (FLOPs)'
set ylabel 'optimal batch'
set title 'optimal batch per (N, D) cell'
plot 'batch_optimum.dat' using 1:($4 == 0 ? $2 : 1/0) with points pt 7 title 'cell optimum', 'batch_optimum.dat' using 1:($4 == 1 ? $2 : 1/0) with points pt 6 ps 2 title 'held out', 'batch_optimum.dat' using 1:3 with points pt 2 title 'fitted law'
