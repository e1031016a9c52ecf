set terminal pngcairo noenhanced size 900,600 font 'sans,11'
set output 'loss_vs_effective_params.png'
set grid
set key top right
set autoscale fix
set offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05
set format x '%.0e'
set logscale x
set xlabel 'N (k ln P + 1), k = 0'
set ylabel 'loss'
set key top right
set title 'streams as a parameter multiplier'
plot 'effective.dat' index 0 with points pt 7 title 'P = 1', 'effective.dat' index 1 with points pt 7 title 'P = 2', 'effective.dat' index 2 with points pt 7 title 'P = 4', 'effective_fit.dat' with lines lw 2 title 'fitted law'
