set terminal pngcairo noenhanced size 900,600 font 'sans,11'
set output 'lr_transfer.png'
set grid
set key top right
set autoscale fix
set offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05
set format x '%.0e'
set logscale x
set xlabel 'learning rate'
set ylabel 'final loss'
plot 'lr_transfer.dat' index 0 with points pt 7 lc 1 title 'depth 2', 'lr_transfer_fit.dat' index 0 with lines lc 1 notitle, 'lr_transfer.dat' index 1 with points pt 7 lc 2 title 'depth 4', 'lr_transfer_fit.dat' index 1 with lines lc 2 notitle, 'lr_transfer.dat' index 2 with points pt 7 lc 3 title 'depth 8', 'lr_transfer_fit.dat' index 2 with lines lc 3 notitle, 'lr_transfer.dat' index 3 with points pt 7 lc 4 title 'depth 16', 'lr_transfer_fit.dat' index 3 with lines lc 4 notitle
