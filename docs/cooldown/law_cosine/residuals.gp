set terminal pngcairo noenhanced size 900,600 font 'sans,11'
set output 'residuals.png'
set grid
set key top right
set autoscale fix
set offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05
set format x '%.0e'
set logscale x
set xlabel 'compute C (FLOPs)'
set ylabel 'log(loss) - log(fitted)'
plot 'residuals.dat' using 1:2 with points pt 7 ps 0.6 title 'residual', 0 with lines dt 2 notitle
