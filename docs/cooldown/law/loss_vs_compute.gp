set terminal pngcairo noenhanced size 900,600 font 'sans,11'
set output 'loss_vs_compute.png'
set grid
set key top right
set autoscale fix
set offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05
set format x '%.0e'
set logscale x
set xlabel 'compute C (FLOPs)'
set ylabel 'loss'
set title 'chinchilla: L = E + A / N^alpha + B / D^beta'
plot 'points.dat' using 1:2 with points pt 7 ps 0.6 title 'points', 'points.dat' using 1:3 with points pt 6 ps 0.6 title 'fitted', 'frontier.dat' using 1:2 with lines lw 2 title 'compute-optimal frontier'
